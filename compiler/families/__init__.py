"""Model families: what kind of model a recipe is, and everything that depends on it.

base.py is the interface (`ModelFamily`, `FamilyBuild`), catalogue.py the one list of families.
single_graph/ holds the one-graph families (transformer, cnn, generic); speech/ holds Whisper
(an encoder and a KV-cache decoder with a generation loop).
"""
