"""A gate after ExampleValidator: anomalies stop the run before Transform and training."""
