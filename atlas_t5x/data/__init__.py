"""Data layer: MADLAD-400 reader, embedded corpus, vocabularies, mixtures and the input pipeline."""
