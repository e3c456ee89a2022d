//! BISO XDP traffic lights: the C program's loader (aya 0.14), policy swap, pinned maps, counters and samples.
