use super::helpers::*;
