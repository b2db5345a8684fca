"""Generated from proto/ by tools/gen_proto.sh (`make proto`); never edit by hand."""
