"""Issue 21: the control side's reading of regions (policy, tiers, the status line)."""

from __future__ import annotations

import pytest

from ashat.errors import InvalidInput
from ashat.ids import configure_args, omega_tier, tier_label, validate_tier
from ashat.workflow.approve import DistributionPolicy, region_summary


def test_regions_are_an_ordered_list_of_distinct_names_kept_from_omega() -> None:
    policy = DistributionPolicy.parse({"waves": [100], "regions": ["eu", "us-east"]})
    assert policy.regions == ("eu", "us-east")
    assert "regions" not in policy.to_json()  # OMEGA's rollout never sees them
    assert DistributionPolicy.parse({}).regions == ()
    for bad in (["eu", "eu"], "eu", ["EU"], [""], [1]):
        with pytest.raises(InvalidInput, match=r"\[distribution\]\.regions must be distinct"):
            DistributionPolicy.parse({"regions": bad})


def test_region_tiers() -> None:
    assert omega_tier(None) == "omega" and omega_tier("eu") == "omega@eu"
    assert validate_tier("omega@us-east") == "omega@us-east"
    for bad in ("public@eu", "omega@", "omega@EU", "omega@eu/../x"):
        with pytest.raises(InvalidInput):
            validate_tier(bad)
    assert tier_label("omega@eu") == "OMEGA (eu)" and tier_label("public") == "PUBLIC"
    assert configure_args("omega@eu") == "omega <url> <name> --region eu"


def test_the_status_line_names_each_region() -> None:
    details = {"regions": ["eu", "us", "ap"], "region": "us", "regions_done": [{"region": "eu"}]}
    assert region_summary(details, "distributing") == (
        "eu completed, us distributing, ap not started"
    )
    details |= {"region": "eu", "regions_done": [{"region": "eu"}], "next_region": "us"}
    assert region_summary(details, "distributing") == (
        "eu completed, us next (deploy approve releases it), ap not started"
    )
    assert region_summary({}, "completed") == ""
