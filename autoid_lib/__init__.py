"""autoid-kit: pseudonymous participant IDs and transfer requests, reconciled from REDCap."""

__version__ = "0.1.0"
