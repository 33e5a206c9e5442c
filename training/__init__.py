"""earshot training: UrbanSound8K log-mel classifiers under the official fold protocol."""
