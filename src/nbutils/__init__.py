"""nbutils: the tested helper package behind the normative-MRI notebook suite."""

__version__ = "0.1.0"
