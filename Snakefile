# preimage: inverting visual representations with convolutional networks
# (Dosovitskiy & Brox, CVPR 2016) as a Snakemake workflow. See README.md.
import os

from snakemake.utils import min_version

min_version("8.0")

# HDF5's file locks fail on many shared file systems (NFS, Lustre) with "unable to lock file".
# Every store here is written under a temporary name and renamed, and never read while written,
# so the locks protect nothing; jobs (local or on a cluster node) inherit this. Set it to TRUE in
# the environment to keep HDF5's default.
os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "rules/common.smk"


rule all:
    input:
        PLAN.all_targets(),
    default_target: True


# Under a cluster executor these run where Snakemake runs instead of waiting in the queue: each
# gathers finished CSV files into a table or the findings page, in well under a second and without torch.
localrules:
    errors_table,
    perturbation_table,
    mahendran_vedaldi_table,
    locality_table,
    findings,


include: "rules/data.smk"
include: "rules/features.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/analyses.smk"
include: "rules/scaling.smk"
include: "rules/baselines.smk"
include: "rules/locality.smk"
include: "rules/tables.smk"
include: "rules/figures.smk"
include: "rules/scorecard.smk"
include: "rules/findings.smk"
