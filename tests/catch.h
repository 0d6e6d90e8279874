// The one include of Catch2 (v2 on Debian 12); a move to v3 touches only this file.
#pragma once
#include <catch2/catch.hpp>
