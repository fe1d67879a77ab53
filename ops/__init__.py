"""Operations: what operators see and do; the reconciler; dead letters; the metrics collector."""
