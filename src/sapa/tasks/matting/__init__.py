"""Image matting (SAPA paper Table 5): the generated set, the Adobe / Composition-1k folders,
A2U's loss and inference, the official MATLAB errors, and the task for ``sapa compare``."""
from .data import collate, model_input
from .folders import AdobeTrain, CompositionTest
from .inference import pad_to_multiple, predict_alpha
from .loss import matting_loss
from .metrics import MattingMeter, conn, grad, matting_errors, mse, sad
from .synthetic import SyntheticMatting
from .task import MattingTask

TASK = MattingTask()

__all__ = ["TASK", "MattingTask", "SyntheticMatting", "AdobeTrain", "CompositionTest",
           "MattingMeter", "matting_errors", "sad", "mse", "grad", "conn", "matting_loss",
           "predict_alpha", "pad_to_multiple", "model_input", "collate"]
