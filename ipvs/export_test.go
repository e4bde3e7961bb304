package ipvs

import "time"

// SetNow replaces the Table's clock (for the trash period) in tests of
// package ipvs_test.
func SetNow(t *Table, now func() time.Time) { t.now = now }
