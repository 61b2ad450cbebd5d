"""Models: timm backbone, ARM pooling, local/global branches, MIM head, the two-branch network,
the baseline, ARM's and SCN's single-branch networks."""
from fer_robust.models.arm import AmendRepresentationModule, arm_geometry
from fer_robust.models.backbone import Backbone, create_backbone
from fer_robust.models.factory import build_model, list_models, register_model
from fer_robust.models.mim import MIMHead, random_masking
from fer_robust.models.network import ARMFER, SCNFER, BaselineFER, TwoBranchFER
from fer_robust.models.weights import LoadReport, PretrainedFileError, load_pretrained_file

__all__ = ["AmendRepresentationModule", "arm_geometry", "Backbone", "create_backbone",
           "build_model", "list_models", "register_model", "MIMHead", "random_masking",
           "BaselineFER", "TwoBranchFER", "ARMFER", "SCNFER", "LoadReport", "PretrainedFileError",
           "load_pretrained_file"]
