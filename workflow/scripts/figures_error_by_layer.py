"""Snakemake adapter: rules error_by_layer, error_by_network_layer → preimage.figures.error_by_layer."""
from preimage import logs

with logs.job(snakemake):
    import pandas as pd
    from preimage import figures

    perturbation = pd.read_csv(snakemake.input.perturbation[0]) if snakemake.input.perturbation else None
    layers = snakemake.params.get("layers")
    network = snakemake.wildcards.get("family", "AlexNet")
    figures.error_by_layer(pd.read_csv(snakemake.input.table), snakemake.output[0], perturbations=perturbation,
                           layers=layers, network="EfficientNet-Lite0" if network == "efficientnet_lite0" else network)
