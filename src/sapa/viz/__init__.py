"""Figures with matplotlib (object-oriented API, no pyplot: no display backend is needed)."""
from .capture import capture_last_upsampling, upsampler_kernels
from .curves import plot_training_curves
from .depth import plot_depth_predictions
from .detections import plot_detections
from .features import feature_rgb, kernel_map, plot_features
from .mattes import detail_crop, plot_mattes
from .palette import colorize
from .predictions import plot_predictions
from .save import save_figure

__all__ = ["plot_predictions", "plot_detections", "plot_depth_predictions", "plot_features",
           "plot_training_curves", "feature_rgb", "kernel_map", "colorize", "save_figure",
           "capture_last_upsampling", "upsampler_kernels", "plot_mattes", "detail_crop"]
