"""Fitting: schedules, callbacks, layer-wise optimizers, the LR range test, resume and distribution."""
