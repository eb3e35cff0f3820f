//! The REST gateway from outside, with external tools: Debian's headless Chromium (driven through chromedriver)
//! on the status page and a cross-origin page, and Schemathesis and an OpenAPI validator on the served document.
//! `scripts/ensure-test-tools.sh` installs them (`scripts/test.sh` runs it).

mod browser;
mod contract;
