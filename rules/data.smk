# Stage 1: ImageNet-subset (or folder / builtin) extraction into the HDF5 image store.
#
# data.shards = 1: one job writes data/train.h5 and data/test.h5. data.shards = N > 1: N jobs
# (extract_shard) each extract a contiguous range of classes into data/shards/<i>-of-<N>/, and
# join_data copies them, in order, into the same two files, which every later stage reads as if
# one job had written them (preimage.data.join_shards says why a copy and not a virtual dataset).
# A failed shard reruns alone; the shard files are temporary (deleted once joined).

EXTRACT_RESOURCES = dict(mem_mb=4000, runtime=scaled_runtime(120))

if SHARDS == 1:

    rule extract_data:
        conda:
            ENVIRONMENT
        output:
            train=f"{R}/data/train.h5",
            test=f"{R}/data/test.h5",
        params:
            data=data_params(),
            log_every=DATA["log_every"],
        threads: DATA["threads"]
        resources:
            **EXTRACT_RESOURCES,
        log:
            f"{R}/logs/data/extract.log",
        benchmark:
            f"{R}/benchmarks/data/extract.tsv"
        script:
            "../workflow/scripts/data_extract.py"

else:

    rule extract_shard:
        conda:
            ENVIRONMENT
        output:
            train=temp(f"{R}/data/shards/{{shard}}/train.h5"),
            test=temp(f"{R}/data/shards/{{shard}}/test.h5"),
        params:
            data=data_params(),
            shard=lambda wc: shard_of(wc.shard),
            log_every=DATA["log_every"],
        wildcard_constraints:
            shard=alternation(SHARD_IDS),
        threads: DATA["threads"]
        resources:
            **EXTRACT_RESOURCES,
        log:
            f"{R}/logs/data/extract_{{shard}}.log",
        benchmark:
            f"{R}/benchmarks/data/extract_{{shard}}.tsv"
        script:
            "../workflow/scripts/data_extract.py"

    rule join_data:
        conda:
            ENVIRONMENT
        input:
            train=expand(f"{R}/data/shards/{{shard}}/train.h5", shard=SHARD_IDS),
            test=expand(f"{R}/data/shards/{{shard}}/test.h5", shard=SHARD_IDS),
        output:
            train=f"{R}/data/train.h5",
            test=f"{R}/data/test.h5",
        resources:
            mem_mb=4000,
            runtime=scaled_runtime(120),
        log:
            f"{R}/logs/data/join.log",
        benchmark:
            f"{R}/benchmarks/data/join.tsv"
        script:
            "../workflow/scripts/data_join.py"
