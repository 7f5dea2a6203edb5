# Configuration validation, targets and wildcard constraints shared by every rule file.
import re
import sys

from preimage.config import ConfigError, load_schema, validate_config
from preimage.representations import Catalog
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
    _validated = validate_config(config, load_schema(workflow.source_path("../workflow/schemas/config.schema.yaml")),
                                 deep=_main_process, devices=_main_process and local_execution())
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
#: parameters, which analyses run where): the rule files ask it and parse no names themselves.
try:
    CATALOG = Catalog(config)
except ValueError as _err:
    sys.stderr.write(f"preimage: invalid configuration: {_err}\n")
    raise SystemExit(1)
REPS = CATALOG.slugs
if workflow_is_main():
    for _note in CATALOG.notes:
        sys.stderr.write(f"preimage: note: {_note}\n")


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
                sys.stderr.write(f"preimage: warning: could not lift the local gpu cap ({err}); "
                                 "CPU jobs may run one at a time. Pass --resources gpu=<n>.\n")
        return
    try:
        resources["gpu"] = max(int(settings.nodes), int(resources["gpu"].value or 0))
    except Exception as err:  # a future Snakemake may keep resources elsewhere: say so
        sys.stderr.write(f"preimage: warning: could not lift the local gpu cap ({err}); "
                         "GPU jobs may run one at a time. Pass --resources gpu=<n>.\n")


lift_local_gpu_cap()


def alternation(names):
    """A wildcard constraint matching exactly ``names`` (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    split="train|test",
    rep=alternation(REPS),


def data_params():
    """Every data.* value that changes the extracted images (threads/log_every excluded, and
    shards: the sharded stores hold the same images as one job's)."""
    return {k: v for k, v in DATA.items() if k not in ("threads", "log_every", "shards")}


#: data.shards: extraction and the training split's feature caches run as this many jobs each
#: (rules/data.smk, rules/features.smk), named 01-of-16 … 16-of-16.
SHARDS = DATA["shards"]
SHARD_IDS = [f"{i + 1:0{len(str(SHARDS))}d}-of-{SHARDS}" for i in range(SHARDS)]


def shard_of(name):
    """(index from 0, count) of a shard's name (``03-of-16`` → (2, 16))."""
    index, count = name.split("-of-")
    return [int(index) - 1, int(count)]


def stored_slugs(store, gpu=None):
    """Representations whose features.store is ``store`` (cache or recompute), optionally only
    those computed on a GPU (True) or the CPU (False)."""
    return [s for s in CATALOG.slugs
            if CATALOG.feature_store(s) == store and (gpu is None or CATALOG[s].uses_gpu == gpu)]


def feature_params(slug):
    return CATALOG.feature_params(slug, R)


def encoder_inputs(slugs):
    """The fine-tuned encoders the autoencoders among ``slugs`` compute their features with."""
    return [f"{R}/{slug}/encoder.pt" for slug in slugs if CATALOG[slug].variant == "ae"]


def feature_extra_inputs(wc):
    """The autoencoder's features need its fine-tuned encoder."""
    return encoder_inputs([wc.rep])


def representation_options(slug):
    """(name, parameters) to recreate a representation inside a job."""
    return CATALOG.options(slug, R)


ANALYSES = config["analyses"]


def analysis_params():
    """Settings every analysis job shares."""
    return {k: ANALYSES[k] for k in ("device", "seed", "n_show")}


def all_targets():
    targets = [f"{R}/data/train.h5", f"{R}/data/test.h5"]
    targets += expand(f"{R}/features/{{rep}}/{{split}}.h5", rep=CATALOG.feature_slugs(True) + CATALOG.feature_slugs(False),
                      split=["train", "test"])
    targets += expand(f"{R}/{{rep}}/{{file}}", rep=REPS, file=["error.csv", "reconstructions.png"])
    if not REPS:
        return targets
    targets += [f"{R}/tables/errors.csv", f"{R}/tables/errors.md"]
    if CATALOG.alexnet_layers():
        targets += [f"{R}/figures/error_by_layer.png", f"{R}/figures/reconstructions_alexnet.png"]
    if CATALOG.shallow():
        targets.append(f"{R}/figures/reconstructions_shallow.png")
    targets += [f"{R}/figures/error_by_layer_{family}.png" for family in CATALOG.network_layers()]
    targets += [f"{R}/figures/gan_{slug}.png" for slug in CATALOG.loss_bases()]
    return targets + analysis_targets() + baseline_targets() + [f"{R}/findings.md"]


def single_analysis(analysis, rep):
    """An analysis that runs on one fixed representation (HOG's brightness, §4) when it is
    configured and the analysis is enabled."""
    return rep in CATALOG.base_slugs and ANALYSES[analysis]["enabled"]


def analysis_targets():
    targets = []
    perturbed = CATALOG.perturbation_slugs()
    for slug in perturbed:
        targets += [f"{R}/{slug}/analysis/perturbation.csv", f"{R}/figures/perturbation_{slug}.png"]
    if perturbed:
        targets.append(f"{R}/tables/perturbation.csv")
    interpolated = CATALOG.analysis_slugs("interpolation")
    targets += [f"{R}/figures/interpolation_{slug}.png" for slug in interpolated]
    if interpolated:
        targets.append(f"{R}/figures/interpolation.png")
    for slug in CATALOG.analysis_slugs("random_samples"):
        targets += [f"{R}/{slug}/analysis/random_samples.csv", f"{R}/figures/random_samples_{slug}.png"]
    targets += [f"{R}/figures/single_units_{slug}.png" for slug in CATALOG.single_unit_slugs()]
    for analysis in ("dark_knowledge", "hue_shift"):
        for slug in CATALOG.analysis_slugs(analysis):
            targets += [f"{R}/{slug}/analysis/{analysis}.csv", f"{R}/figures/{analysis}_{slug}.png"]
    if single_analysis("brightness", "hog"):
        targets += [f"{R}/hog/analysis/brightness.csv", f"{R}/figures/brightness.png"]
    local = CATALOG.analysis_slugs("locality")
    for slug in local:
        targets += [f"{R}/{slug}/analysis/locality.csv", f"{R}/figures/locality_{slug}.png"]
    if local:
        targets.append(f"{R}/tables/locality.csv")
    if CATALOG.analysis_slugs("scaling"):
        targets += [f"{R}/tables/scaling.csv", f"{R}/tables/scaling.md", f"{R}/figures/scaling.png"]
    return targets


def scaling_fractions():
    """analyses.scaling.fractions as the {fraction} wildcard's values (0.125 → "0.125")."""
    return [f"{f:g}" for f in ANALYSES["scaling"]["fractions"]]


def scaling_decoder(rep, fraction):
    """The decoder a point of the data-scaling curve scores: the representation's own at 1."""
    return f"{R}/{rep}/decoder.pt" if fraction == "1" else f"{R}/{rep}/scaling/{fraction}/decoder.pt"


def scaling_error_files():
    """Representation → the per-image error CSVs of its data-scaling curve (subsets, then all)."""
    return {rep: [f"{R}/{rep}/scaling/{f}/errors.csv" for f in scaling_fractions() + ["1"]]
            for rep in CATALOG.analysis_slugs("scaling")}


def scaling_references():
    """Representation → its error.csv (the mean-image line of the scaling figure)."""
    return {rep: f"{R}/{rep}/error.csv" for rep in CATALOG.analysis_slugs("scaling")}


def baseline_targets():
    slugs = CATALOG.mahendran_vedaldi_slugs()
    targets = []
    for slug in slugs:
        targets += [f"{R}/{slug}/mahendran_vedaldi.csv", f"{R}/figures/mahendran_vedaldi_{slug}.png"]
        if config["baselines"]["mahendran_vedaldi"]["restarts"] > 1:
            targets.append(f"{R}/figures/mahendran_vedaldi_samples_{slug}.png")
    if slugs:
        targets += [f"{R}/tables/mahendran_vedaldi.csv", f"{R}/tables/mahendran_vedaldi.md"]
    return targets


def findings_inputs(wc):
    """The tables findings.md is written from (those the config produces)."""
    inputs = {"errors": f"{R}/tables/errors.csv"}
    optional = {
        "perturbation": (f"{R}/tables/perturbation.csv", CATALOG.perturbation_slugs()),
        "mahendran_vedaldi": (f"{R}/tables/mahendran_vedaldi.csv", CATALOG.mahendran_vedaldi_slugs()),
        "brightness": (f"{R}/hog/analysis/brightness.csv", single_analysis("brightness", "hog")),
        "scaling": (f"{R}/tables/scaling_fit.csv", CATALOG.analysis_slugs("scaling")),
    }
    inputs.update({k: path for k, (path, wanted) in optional.items() if wanted})
    for analysis in ("dark_knowledge", "hue_shift"):
        slugs = CATALOG.analysis_slugs(analysis)
        if slugs:
            inputs[analysis] = expand(f"{R}/{{rep}}/analysis/{analysis}.csv", rep=slugs)
    return inputs


def reconstruction_group(group):
    """The representations of paper Figure 3 (shallow) or Figure 5 (AlexNet layers)."""
    return CATALOG.shallow() if group == "shallow" else CATALOG.alexnet_layers()


def loss_comparison_inputs(wc):
    """Figures 12-13 for one representation: its -gan / -feature variants and its own decoder, and
    Mahendran & Vedaldi's pre-images where that baseline ran for it."""
    family = CATALOG.loss_family(wc.rep)
    inputs = {"test_images": f"{R}/data/test.h5",
              "reconstructions": expand(f"{R}/{{rep}}/reconstructions.h5", rep=family),
              "errors": expand(f"{R}/{{rep}}/error.csv", rep=family)}
    if wc.rep in CATALOG.mahendran_vedaldi_slugs():
        inputs.update(mv_images=f"{R}/{wc.rep}/mahendran_vedaldi.h5", mv_table=f"{R}/{wc.rep}/mahendran_vedaldi.csv")
    return inputs


def feature_settings():
    """The settings every feature job shares (those of no one representation)."""
    return dict(dtype=FEATURES["dtype"], batch_size=FEATURES["batch_size"], device=FEATURES["device"],
                log_every=DATA["log_every"])


def feature_job_params():
    """What a feature job of one representation is parameterised by (shared by the shallow cache,
    shard and recipe rules; a network's extraction job: network_job_params)."""
    return dict(
        representation=lambda wc: CATALOG[wc.rep].name,
        options=lambda wc: feature_params(wc.rep),
        **feature_settings(),
    )


def network_job_params(slugs):
    """What a network's extraction job is parameterised by: its nodes (configured names, in the
    order of its outputs), that network's parameters and the settings every feature job shares."""
    return dict(
        representations=[CATALOG[slug].name for slug in slugs],
        options=feature_params(slugs[0]),
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
        sys.stderr.write(f"preimage: warning: could not apply the settings of {nominal} to {rule_name} ({err}); "
                         f"set its resources under its own name.\n")
