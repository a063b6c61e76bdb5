"""Tests of the local POLYV simulator."""
