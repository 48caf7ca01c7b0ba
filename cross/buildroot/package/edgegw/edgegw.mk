################################################################################
#
# edgegw
#
################################################################################

# EDGEGW_VERSION and EDGEGW_LICENSE are kept in step with Cargo.toml by cross/update-recipes.
EDGEGW_VERSION = 0.1.0
# The checkout this external tree lives in (cross/buildroot/ -> the repository root). To build a
# release from your git mirror instead, set EDGEGW_SITE and EDGEGW_SITE_METHOD = git in a
# package override; Buildroot's cargo infrastructure then vendors at download time, and the
# archive's hash belongs in edgegw.hash.
EDGEGW_SITE = $(realpath $(BR2_EXTERNAL_EDGEGW_PATH)/../..)
EDGEGW_SITE_METHOD = local
EDGEGW_LICENSE = MIT or Apache-2.0
# The daemon's crate: cargo build and cargo install run in daemon/, in the workspace whose
# Cargo.lock pins every dependency.
EDGEGW_SUBDIR = daemon

ifeq ($(BR2_PACKAGE_EDGEGW_AWS_LC_RS),y)
EDGEGW_DEPENDENCIES += host-cmake
EDGEGW_CARGO_BUILD_OPTS += --no-default-features --features aws-lc-rs
EDGEGW_CARGO_INSTALL_OPTS += --no-default-features --features aws-lc-rs
endif

# A local source is not downloaded, so the cargo infrastructure's download-time vendoring does
# not run: vendor after the rsync instead, from Cargo.lock (--locked: cargo checks every crate
# against the checksum Cargo.lock records) into the shared cargo home in DL_DIR.
define EDGEGW_VENDOR_CRATES
	cd $(@D) && mkdir -p .cargo && \
		$(PKG_CARGO_ENV) cargo vendor --locked --versioned-dirs VENDOR > .cargo/config.toml
endef
EDGEGW_POST_RSYNC_HOOKS += EDGEGW_VENDOR_CRATES

$(eval $(cargo-package))
