# Stage 3: one up-convolutional decoder per representation (paper §3, §4).


rule train:
    conda:
        ENVIRONMENT
    input:
        # the -feature / -gan variants (Appendix A) train on their base representation's features
        features=lambda wc: f"{R}/features/{CATALOG.features_of(wc.rep)}/train.h5",
        images=f"{R}/data/train.h5",
        # decoder.init: pixel starts a -feature / -gan decoder from its base's pixel decoder
        init=lambda wc: PLAN.init_decoder(wc.rep),
    output:
        decoder=f"{R}/{{rep}}/decoder.pt",
        log=f"{R}/{{rep}}/train_log.csv",
    params:
        representation=lambda wc: CATALOG[wc.rep].name,
        train=lambda wc: CATALOG.train_params(wc.rep),
        # pixel (eq. 1), feature or gan (Appendix A): the kind, the representation and decoder.gan
        loss=lambda wc: PLAN.loss_params(wc.rep),
        # Outside the declared outputs (Snakemake deletes those before a job starts): a killed
        # or timed-out job resumes from the last finished epoch.
        checkpoint=lambda wc: f"{R}/checkpoints/{wc.rep}/train.pt",
    wildcard_constraints:
        rep=alternation(PLAN.decoder_slugs()),
    threads: config["train"]["threads"]
    priority: lambda wc: train_priority(wc.rep)
    resources:
        mem_mb=16000,
        runtime=scaled_runtime(480),
        gpu=1,
    log:
        f"{R}/logs/train/{{rep}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{rep}}.tsv"
    script:
        "../workflow/scripts/train_decoder.py"


rule train_autoencoder:
    """AlexNet autoencoder (§5.2): the decoder trained jointly with the layers below it."""
    conda:
        ENVIRONMENT
    input:
        images=f"{R}/data/train.h5",
    output:
        decoder=f"{R}/{{layer}}-ae/decoder.pt",
        log=f"{R}/{{layer}}-ae/train_log.csv",
        encoder=f"{R}/{{layer}}-ae/encoder.pt",
    wildcard_constraints:
        layer=alternation([CATALOG[s].base for s in CATALOG.with_variant("ae")]),
    params:
        train=lambda wc: CATALOG.train_params(f"{wc.layer}-ae"),
        alexnet=FEATURES["alexnet"],
        encoder_lr_scale=config["variants"]["encoder_lr_scale"],
        checkpoint=lambda wc: f"{R}/checkpoints/{wc.layer}-ae/train.pt",
    threads: config["train"]["threads"]
    resources:
        mem_mb=16000,
        runtime=scaled_runtime(720),
        gpu=1,
    log:
        f"{R}/logs/train/{{layer}}-ae.log",
    benchmark:
        f"{R}/benchmarks/train/{{layer}}-ae.tsv"
    script:
        "../workflow/scripts/train_autoencoder.py"
