"""The classifier and its data: the LightningModule (input transform, network), the deskewing transform,
the data modules, and checkpoint files."""
