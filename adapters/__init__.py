"""The provider-neutral execution plane: one module per provider."""
