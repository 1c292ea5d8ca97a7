"""Monthly statements for a landlord: per meter and for the whole property (issue 15). Pure."""
