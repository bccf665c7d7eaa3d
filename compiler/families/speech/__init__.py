"""The speech family (Whisper): family.py declares it, build.py is one build; importer.py,
ctranslate2_whisper.py and export.py import and export the model, generate.py and native_loop.py
run the generation loop, features.py computes log-mel, testset.py synthesises the test set,
evaluate.py, part_context.py and wer.py score transcripts."""
