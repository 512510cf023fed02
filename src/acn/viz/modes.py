"""The sampling pictures ``acn sample`` and the report draw, with what each shows (no torch
here: the command line reads them)."""

MODES = {
    "daydream": "x -> code -> z ~ p(z|code) -> x ~ r(x|z) -> ..., one row per chain",
    "reconstruct": "decoder samples from z ~ q(z|x)",
    "neighbours": "the nearest training images by code",
    "prior": "decoder samples from z ~ p(z|code of x)",
    "unconditional": "samples with no starting image",
}
