"""Small helpers every package may import: typed config, atomic files, paths, optional imports.

Nothing here imports a heavy library; `common` imports nothing from pipeline/, dedup/ or training/.
"""
