# Stage 1: ImageNet-subset (or folder / builtin) extraction into the HDF5 image store.


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
        mem_mb=4000,
        runtime=scaled_runtime(120),
    log:
        f"{R}/logs/data/extract.log",
    benchmark:
        f"{R}/benchmarks/data/extract.tsv"
    script:
        "../workflow/scripts/data_extract.py"
