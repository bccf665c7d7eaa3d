"""Speech models (Whisper): export, features, decoding, the synthetic test set and word error rate."""
