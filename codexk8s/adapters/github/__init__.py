"""GitHub adapter: webhook verification, REST client, OAuth."""
