# Stage 3: one up-convolutional decoder per representation (paper §3, §4).


rule train:
    input:
        features=f"{R}/features/{{rep}}/train.h5",
        images=f"{R}/data/train.h5",
    output:
        decoder=f"{R}/{{rep}}/decoder.pt",
        log=f"{R}/{{rep}}/train_log.csv",
    params:
        representation=lambda wc: REPS[wc.rep],
        train=lambda wc: train_params(wc.rep),
        # Outside the declared outputs (Snakemake deletes those before a job starts): a killed
        # or timed-out job resumes from the last finished epoch.
        checkpoint=lambda wc: f"{R}/checkpoints/{wc.rep}/train.pt",
    threads: config["train"]["threads"]
    resources:
        gpu=1,
    log:
        f"{R}/logs/train/{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{rep}}.tsv"
    script:
        "../workflow/scripts/train_decoder.py"
