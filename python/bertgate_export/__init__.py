"""bertgate's Python side: export a Hugging Face BertForSequenceClassification to a bundle."""

__version__ = "0.1.0"
