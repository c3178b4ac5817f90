"""Unit tests for plugins/module_utils/errors.py: one error_type vocabulary, carried by each class."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import errors
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.job import MissingLibrary


@pytest.mark.parametrize("cls, error_type", [
    (errors.StorageError, "storage"), (errors.InvalidRequest, "invalid_request"), (errors.NotFound, "not_found"),
    (errors.Busy, "busy"), (errors.WaitTimeout, "timeout"), (errors.CommandError, "command"),
])
def test_each_class_carries_its_error_type_from_the_vocabulary(cls, error_type):
    assert cls.error_type == error_type
    assert error_type in errors.ERROR_TYPES


def test_a_refined_error_keeps_the_type_of_the_class_it_refines():
    class Refined(errors.InvalidRequest):
        pass
    assert Refined("x").error_type == "invalid_request"


def test_every_error_class_in_plugins_reports_a_type_of_the_vocabulary():
    # error classes defined outside errors.py (exports.py, data_copy/job.py ...) inherit a known type
    classes = [errors.StorageError]
    seen = set()
    while classes:
        cls = classes.pop()
        seen.add(cls)
        classes.extend(c for c in cls.__subclasses__() if c not in seen)
    assert MissingLibrary in seen
    for cls in seen:
        assert cls.error_type in errors.ERROR_TYPES, cls


def test_a_missing_library_has_its_own_type():
    # data_copy reports it as missing_library, the type of the vocabulary that says so
    assert MissingLibrary("no xxhash", "xxhash").error_type == "missing_library"
