// Package prefetch asks the CPU to start loading a cache line that will be
// needed soon. Unlike a plain load whose result is thrown away, a prefetch
// does not hold up the instructions after it while the line is on its way,
// so a miss started early costs nothing if the line is not needed before it
// arrives. Go has no prefetch intrinsic for user code; this is one
// instruction in assembly on amd64 and arm64 and a no-op elsewhere.
//
// A prefetch is a hint: it never faults and never changes what a program
// computes, only how long its loads wait.
package prefetch
