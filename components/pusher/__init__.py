"""TwoTowerPusher: both towers to TF Serving under one integer version, plus models.config."""
