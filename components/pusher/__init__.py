"""TwoTowerPusher: both towers to TF Serving's layout under one integer version, with warm-up
records; ServingConfig (components/serving_config) decides what is served."""
