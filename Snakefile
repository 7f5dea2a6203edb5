# preimage: inverting visual representations with convolutional networks
# (Dosovitskiy & Brox, CVPR 2016) as a Snakemake workflow. See README.md.
import os

from snakemake.utils import min_version

min_version("8.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "rules/common.smk"


rule all:
    input:
        all_targets(),
    default_target: True


include: "rules/data.smk"
include: "rules/features.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/analyses.smk"
include: "rules/baselines.smk"
