# Configuration validation, the catalog and the plan, and wildcard constraints shared by every rule file.
import re
import sys

from preimage.config import ConfigError, validate_config
from preimage.plan import Plan
from preimage.results_lock import ResultsInUse, lock_results, release_results


def local_execution():
    """Whether the jobs run on this machine. The executor is not known while the Snakefile is
    read; Snakemake sets ``nodes`` (from ``--jobs``) only for non-local executors (its own
    scheduler lifts the core limit on the same sign). Locally with both --cores and --jobs this
    says False too: the checks that depend on it are then left to the jobs."""
    return getattr(getattr(workflow, "resource_settings", None), "nodes", None) is None


# deep: network node names and image counts, checked once by the main process (not again by every
# job a cluster executor starts). devices: cuda device keys against this machine's GPUs, only
# where the jobs run here (a cluster's login node may have no GPU while its jobs get one).
_main_process = getattr(workflow, "is_main_process", True)
try:
    _validated = validate_config(config, deep=_main_process, devices=_main_process and local_execution())
except ConfigError as _err:
    sys.stderr.write(f"preimage: {_err}\n")
    raise SystemExit(1)
config.clear()
config.update(_validated)

R = config["results"]


def take_results_lock():
    """One run at a time per results folder (:mod:`preimage.results_lock`), held by the main
    process from the start of the run until it exits; runs from the ``onstart`` hook, so not in dry
    runs nor in cluster jobs (started with --no-hooks); ``--nolock`` skips it with Snakemake's
    own lock."""
    settings = getattr(workflow, "execution_settings", None)
    if settings is not None and not settings.lock:
        return
    try:
        warning = lock_results(R)
    except ResultsInUse as err:
        sys.stderr.write(f"preimage: {err}\n")
        raise SystemExit(1)
    if warning:
        sys.stderr.write(f"preimage: warning: {warning}\n")


onstart:
    take_results_lock()


onsuccess:
    release_results(R)


onerror:
    release_results(R)


#: With --software-deployment-method conda every job runs in the project's environment (paths in a
#: conda directive are relative to the rule file).
ENVIRONMENT = "../environment.yml"


def workflow_is_main():
    """True in the Snakemake process the user started (notes are printed there only)."""
    return getattr(workflow, "is_main_process", True)


DATA = config["data"]
FEATURES = config["features"]


#: Every representation of the config, variants included, resolved by the library (slugs, families,
#: parameters, network groups), and PLAN, what the workflow makes of them (which jobs, which layers
#: each analysis runs on, the targets, paths under R). The rule files ask them and parse no names.
try:
    PLAN = Plan(config)
except ValueError as _err:
    sys.stderr.write(f"preimage: invalid configuration: {_err}\n")
    raise SystemExit(1)
CATALOG = PLAN.catalog
REPS = CATALOG.slugs
if workflow_is_main():
    for _note in PLAN.notes:
        sys.stderr.write(f"preimage: note: {_note}\n")


#: The longest chain of training jobs: a decoder that starts from another's weights (decoder.init:
#: pixel, the -gan / -feature variants) and the pixel decoder it starts from.
TRAIN_CHAIN = {s for s in PLAN.decoder_slugs() if CATALOG.starts_from(s)}
TRAIN_CHAIN |= {CATALOG.starts_from(s) for s in TRAIN_CHAIN}


#: Priority of the feature extraction jobs: before any training, since every decoder waits for its
#: features and extraction is short (Snakemake does not pass a job's priority on to the jobs it needs).
EXTRACT_FIRST = 4


def train_priority(slug):
    """Longest training first, so that the short jobs (the other decoders, evaluations, analyses,
    figures) fill the cores around the long ones instead of leaving one alone at the end: the
    chain of TRAIN_CHAIN, then the decoders of the shallow features (HOG, SIFT, LBP: the largest
    decoders, supplementary Tables 3-4), then the other decoders, then every job after training."""
    if slug in TRAIN_CHAIN:
        return 3
    return 1 if CATALOG[slug].uses_gpu else 2


def scaled_runtime(minutes):
    """A job's time limit in minutes, growing with each retry (``--retries``): a job killed at its
    limit is resubmitted with twice, three times … the time, and resumes from its checkpoint."""
    return lambda wildcards, attempt: minutes * attempt


def no_local_gpu():
    """Whether the jobs that run here will find no GPU: ``CUDA_VISIBLE_DEVICES`` hides them all,
    or ``nvidia-smi`` lists none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return visible.strip() in ("", "-1")
    from preimage.devices import visible_gpu_count

    return visible_gpu_count() == 0


def lift_local_gpu_cap():
    """profiles/default caps GPU jobs for one machine (``resources: gpu=1``), and Snakemake loads it
    on top of any ``--profile``. Under a cluster executor SLURM hands out the GPUs, so the cap
    would run one GPU job at a time on the whole cluster: raise it to ``--jobs`` there
    (:func:`local_execution`). Locally with both --cores and --jobs the cap rises too, and the
    per-GPU locks of preimage.devices still keep one job per GPU. Locally without a GPU
    (:func:`no_local_gpu`) the cap rises to ``--cores``: those jobs run on the CPU, and one at a
    time would leave cores idle while a job starts Python, reads its stores or writes its outputs."""
    settings = getattr(workflow, "resource_settings", None)
    resources = getattr(workflow, "global_resources", None)
    if resources is None or "gpu" not in resources:
        return
    if local_execution():
        # no GPU here: the "GPU jobs" run on the CPU cores, which --cores already shares out
        if no_local_gpu():
            try:
                resources["gpu"] = max(int(settings.cores or 1), int(resources["gpu"].value or 0))
            except Exception as err:
                sys.stderr.write(
                    f"preimage: warning: could not lift the local gpu cap ({err}); "
                    "CPU jobs may run one at a time. Pass --resources gpu=<n>.\n"
                )
        return
    try:
        resources["gpu"] = max(int(settings.nodes), int(resources["gpu"].value or 0))
    except Exception as err:  # a future Snakemake may keep resources elsewhere: say so
        sys.stderr.write(
            f"preimage: warning: could not lift the local gpu cap ({err}); "
            "GPU jobs may run one at a time. Pass --resources gpu=<n>.\n"
        )


lift_local_gpu_cap()


def alternation(names):
    """A wildcard constraint matching exactly ``names`` (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    split="train|test",
    rep=alternation(REPS),


def data_params():
    """Every data.* value that changes the extracted images (threads/log_every excluded, and
    shards/min_shard_images: the sharded stores hold the same images as one job's)."""
    return {k: v for k, v in DATA.items() if k not in ("threads", "log_every", "shards", "min_shard_images")}


#: data.shards, at most one per data.min_shard_images images (preimage.data.shard_count): extraction
#: and the training split's feature caches run as this many jobs each (rules/data.smk,
#: rules/features.smk), named 01-of-16 … 16-of-16.
SHARDS = 1
if DATA["shards"] > 1:  # (preimage.data, with numpy and h5py, is imported only here)
    from preimage.data import DataError, shard_count

    try:
        SHARDS = shard_count(data_params(), DATA["shards"], DATA["min_shard_images"])
    except DataError as _err:
        sys.stderr.write(f"preimage: data: {_err}\n")
        raise SystemExit(1)
if SHARDS < DATA["shards"] and workflow_is_main():
    sys.stderr.write(
        f"preimage: note: data.shards: {SHARDS} shard(s), one per data.min_shard_images "
        f"({DATA['min_shard_images']}) images at most\n"
    )
SHARD_IDS = [f"{i + 1:0{len(str(SHARDS))}d}-of-{SHARDS}" for i in range(SHARDS)]


def shard_of(name):
    """(index from 0, count) of a shard's name (``03-of-16`` → (2, 16))."""
    index, count = name.split("-of-")
    return [int(index) - 1, int(count)]


def feature_extra_inputs(wc):
    """The autoencoder's features need its fine-tuned encoder."""
    return PLAN.encoder_inputs([wc.rep])


ANALYSES = config["analyses"]


def analysis_params():
    """Settings every analysis job shares."""
    return {k: ANALYSES[k] for k in ("device", "seed", "n_show")}


def findings_inputs(wc):
    return PLAN.findings_inputs()


def loss_comparison_inputs(wc):
    return PLAN.loss_comparison_inputs(wc.rep)


def feature_settings():
    """The settings every feature job shares (those of no one representation)."""
    return dict(
        dtype=FEATURES["dtype"],
        batch_size=FEATURES["batch_size"],
        device=FEATURES["device"],
        log_every=DATA["log_every"],
    )


def feature_job_params():
    """What a feature job of one representation is parameterised by (shared by the shallow cache,
    shard and recipe rules; a network's extraction job: network_job_params)."""
    return dict(
        representation=lambda wc: CATALOG[wc.rep].name,
        options=lambda wc: PLAN.feature_params(wc.rep),
        **feature_settings(),
    )


def network_job_params(slugs):
    """What a network's extraction job is parameterised by: its nodes (configured names, in the
    order of its outputs), that network's parameters and the settings every feature job shares."""
    return dict(
        representations=[CATALOG[slug].name for slug in slugs],
        options=PLAN.feature_params(slugs[0]),
        **feature_settings(),
    )


def share_profile_settings(rule_name, nominal):
    """A profile's set-resources / set-threads (--set-resources, --set-threads) name rules, and
    the networks' extraction rules are named after the configured networks. Each takes what is
    set for ``nominal`` (network_features, network_feature_shard), so that a profile needs no
    name that depends on the configuration; what is set for the rule's own name wins."""
    from snakemake.resources import Resources

    settings = getattr(workflow, "resource_settings", None)
    try:
        job_rule = workflow.get_rule(rule_name)
        resources = dict(getattr(settings, "overwrite_resources", None) or {})
        if nominal in resources:
            own = resources.get(rule_name) or {}
            for key, value in Resources.from_mapping(resources[nominal]).items():
                if key not in own:
                    job_rule.resources[key] = value
        threads = dict(getattr(settings, "overwrite_threads", None) or {})
        if nominal in threads and rule_name not in threads:
            job_rule.resources["_cores"] = threads[nominal]
    except Exception as err:  # a future Snakemake may keep these settings elsewhere: say so
        sys.stderr.write(
            f"preimage: warning: could not apply the settings of {nominal} to {rule_name} ({err}); "
            f"set its resources under its own name.\n"
        )
