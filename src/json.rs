//! A bounded JSON decoder producing Python values exactly as `json.loads` would.
//! TODO: being written.
