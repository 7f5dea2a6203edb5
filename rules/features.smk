# Stage 2: the HDF5 feature cache, one file per representation and split. Two rules with one body:
# `features` for the CNN layers (a GPU job) and `shallow_features` for HOG/SIFT/LBP (CPU), so that
# profiles/slurm can send each to the right partition through set-resources. `use rule … with:`
# replaces the whole resources block (and the wildcard constraints), hence the shared parts below.
#
# features.store (per representation or family, resolved by the catalog):
#   cache     — the features are computed here and stored; with data.shards = N > 1 the training
#               split's cache is computed by N jobs (feature_shard / shallow_feature_shard, each a
#               contiguous range of rows) and copied into one file by join_features.
#   recompute — feature_recipe writes a file holding only the cache's attributes; the jobs that
#               read it compute the features from the stored pixels (preimage.features.cache).
# Either way every later rule reads features/{rep}/{split}.h5 and cannot tell the difference.

FEATURE_RESOURCES = dict(mem_mb=8000, runtime=scaled_runtime(120))
#: The splits whose cache one job computes: both, or only the test split when the training
#: split is sharded (the test split, 2,000 images in the paper, is one job either way).
WHOLE_SPLITS = "train|test" if SHARDS == 1 else "test"


rule features:
    conda:
        ENVIRONMENT
    input:
        images=f"{R}/data/{{split}}.h5",
        encoder=feature_extra_inputs,
    output:
        f"{R}/features/{{rep}}/{{split}}.h5",
    params:
        **feature_job_params(),
    threads: FEATURES["threads"]
    resources:
        **FEATURE_RESOURCES,
        gpu=1,
    wildcard_constraints:
        rep=alternation(stored_slugs("cache", gpu=True)),
        split=WHOLE_SPLITS,
    log:
        f"{R}/logs/features/{{rep}}/{{split}}.log",
    benchmark:
        f"{R}/benchmarks/features/{{rep}}/{{split}}.tsv"
    script:
        "../workflow/scripts/features_compute.py"


use rule features as shallow_features with:
    wildcard_constraints:
        rep=alternation(stored_slugs("cache", gpu=False)),
        split=WHOLE_SPLITS,
    resources:
        **FEATURE_RESOURCES,
        gpu=0,


rule feature_recipe:
    """features.store: recompute — the cache's attributes only; readers compute the features."""
    conda:
        ENVIRONMENT
    input:
        images=f"{R}/data/{{split}}.h5",
        encoder=feature_extra_inputs,
    output:
        f"{R}/features/{{rep}}/{{split}}.h5",
    params:
        **feature_job_params(),
    resources:
        mem_mb=4000,
        runtime=scaled_runtime(30),
        gpu=0,
    wildcard_constraints:
        rep=alternation(stored_slugs("recompute")),
    log:
        f"{R}/logs/features/{{rep}}/{{split}}.log",
    script:
        "../workflow/scripts/features_recipe.py"


if SHARDS > 1:

    rule feature_shard:
        conda:
            ENVIRONMENT
        input:
            images=f"{R}/data/train.h5",
            encoder=feature_extra_inputs,
        output:
            temp(f"{R}/features/{{rep}}/shards/train-{{shard}}.h5"),
        params:
            **feature_job_params(),
            shard=lambda wc: shard_of(wc.shard),
        threads: FEATURES["threads"]
        resources:
            **FEATURE_RESOURCES,
            gpu=1,
        wildcard_constraints:
            rep=alternation(stored_slugs("cache", gpu=True)),
            shard=alternation(SHARD_IDS),
        log:
            f"{R}/logs/features/{{rep}}/train-{{shard}}.log",
        benchmark:
            f"{R}/benchmarks/features/{{rep}}/train-{{shard}}.tsv"
        script:
            "../workflow/scripts/features_compute.py"

    use rule feature_shard as shallow_feature_shard with:
        wildcard_constraints:
            rep=alternation(stored_slugs("cache", gpu=False)),
            shard=alternation(SHARD_IDS),
        resources:
            **FEATURE_RESOURCES,
            gpu=0,

    rule join_features:
        conda:
            ENVIRONMENT
        input:
            shards=lambda wc: expand(f"{R}/features/{wc.rep}/shards/train-{{shard}}.h5", shard=SHARD_IDS),
        output:
            f"{R}/features/{{rep}}/train.h5",
        resources:
            mem_mb=4000,
            runtime=scaled_runtime(60),
            gpu=0,
        wildcard_constraints:
            rep=alternation(stored_slugs("cache")),
        log:
            f"{R}/logs/features/{{rep}}/join.log",
        benchmark:
            f"{R}/benchmarks/features/{{rep}}/join.tsv"
        script:
            "../workflow/scripts/features_join.py"
