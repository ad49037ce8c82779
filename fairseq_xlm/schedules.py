"""Loss weights given as a constant or a piecewise-linear schedule (the authors' lambda strings)."""

from fairseq.tasks.online_backtranslation import PiecewiseLinearFn

from .errors import ConfigError


def parse_schedule(spec: str, flag: str) -> PiecewiseLinearFn:
    """'1' or '0:1,10000:0.1' (update:value, linear in between, constant after) -> fairseq's PiecewiseLinearFn."""
    try:
        fn = PiecewiseLinearFn.from_string(str(spec).strip())
    except (ValueError, AssertionError) as err:
        raise ConfigError(f"{flag} {spec!r}: expected a number or 'update:value,update:value,...' "
                         f"with increasing updates") from err
    steps = [x for x, _ in fn.pieces]
    if steps != sorted(steps) or len(set(steps)) != len(steps):
        raise ConfigError(f"{flag} {spec!r}: updates must be strictly increasing")
    if any(v < 0 for _, v in fn.pieces):
        raise ConfigError(f"{flag} {spec!r}: weights must be >= 0")
    return fn
