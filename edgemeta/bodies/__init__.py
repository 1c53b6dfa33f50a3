"""Bodies of the recognizer: the network between the waveform and the adaptable head.

``whisper_*`` modules hold a pretrained whisper encoder (front end, encoder, the importer of
its CTranslate2 weights); nothing here imports ctranslate2.
"""
