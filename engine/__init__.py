"""The SERT pipeline, free of UI code: config, data, models, sampling, filters, training, teacher, eval."""
