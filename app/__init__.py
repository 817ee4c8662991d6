"""tbx-finetune application layer: the command line and the errors it reports."""
