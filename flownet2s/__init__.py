"""FlowNet2-s with Conv6 taps and the scale field, the warp, and the DFF propagator (§3.1).

`build_flownet` and `load_flownet` are imported lazily (module __getattr__) so that
`import flownet2s.warp` stays light.
"""

__all__ = ["build_flownet", "load_flownet"]


def __getattr__(name):
    if name in __all__:
        from flownet2s import model
        return getattr(model, name)
    raise AttributeError(f"module 'flownet2s' has no attribute {name!r}")
