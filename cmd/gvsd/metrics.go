package main

import (
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"gvs/daemon"
	"gvs/metrics"
)

// metricsSource is what --metrics exposes of d: its table, connection
// table and workers' counters, reloads counted by rel.
func metricsSource(d *daemon.Daemon, rel *metrics.Reloads, nodeIPVS bool) metrics.Source {
	src := metrics.Source{
		Table:    d.Table(),
		Conns:    d.Conns(),
		Reloads:  rel,
		NodeIPVS: nodeIPVS,
		RingDrops: func() (uint64, uint64, uint64) {
			s := d.Stats()
			return s.RingDrops - s.SYNRingDrops - s.UDPRingDrops, s.SYNRingDrops, s.UDPRingDrops
		},
		Health: d.Health(),
	}
	pipes, loops := d.WorkerCounters()
	for i := range pipes {
		l := loops[i]
		src.Workers = append(src.Workers, metrics.Worker{Pipeline: pipes[i], RX: &l.RX, TX: &l.TX,
			Oversize: &l.Oversize, TXFull: &l.TXFull, TXError: &l.TXError, SYNBudget: &l.SYNBudget})
	}
	return src
}

// serveMetrics serves Prometheus's /metrics on ln until the returned
// server is closed.
func serveMetrics(ln net.Listener, src metrics.Source, log *zap.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(metrics.NewRegistry(metrics.NewCollector(src))))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("gvsd: metrics at /metrics\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Info("serving metrics", zap.String("addr", ln.Addr().String()))
	go srv.Serve(ln)
	return srv
}
