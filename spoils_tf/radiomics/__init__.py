"""IBSI radiomics of each disc (pyradiomics): ``extract`` (one disc on one slice) and
``table`` (a dataset -> one row per disc, slices aggregated, settings saved beside it)."""
