"""Multi-channel datasets (HPA, RxRx1...): their metadata, source, split, channel files and small toy copies."""
