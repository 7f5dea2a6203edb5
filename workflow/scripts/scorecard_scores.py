"""Snakemake adapter: rule scorecard_scores → preimage.scorecard.score_representation."""
from preimage import logs

with logs.job(snakemake):
    from preimage import scorecard
    from preimage.devices import resolve_device
    from preimage.features import create

    inputs, params = snakemake.input, snakemake.params
    device = resolve_device(params.device)
    decoders = {method: {"reconstructions": r, "errors": e}
                for method, r, e in zip(params.methods, inputs.reconstructions, inputs.errors)}
    mv = {"images": inputs.mv_images, "table": inputs.mv_table} if hasattr(inputs, "mv_images") else None
    classifier = scorecard.load_classifier(params.classifier["name"], params.classifier["params"], device,
                                           params.batch_size)
    representation = create(params.options["name"], **params.options["params"]).to(device)
    scorecard.score_representation(
        params.representation, representation, inputs.test_images, inputs.train_images, decoders, classifier,
        snakemake.output[0], mahendran_vedaldi=mv, batch_size=params.batch_size, seed=params.seed)
