"""Training: the config schema, the LightningModule, the data module, callbacks, TensorBoard visuals
and sweep summaries. Imports Lightning, torchmetrics and datasets; serving (encoder.load_model) never
imports this package."""
