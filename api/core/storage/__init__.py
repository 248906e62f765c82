"""Blob stores for encrypted segments: an interface and its implementations."""

from api.core.storage.interface import BlobStore, ObjectExists, ObjectHeld, ObjectMissing

__all__ = ["BlobStore", "ObjectExists", "ObjectHeld", "ObjectMissing"]
