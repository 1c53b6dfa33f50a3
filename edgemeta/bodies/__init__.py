"""Bodies of the recognizer: the network between the waveform and the adaptable head.

``whisper_*`` modules hold a pretrained whisper encoder (front end, encoder, weight importers);
nothing here imports openai-whisper, transformers or ctranslate2.
"""
