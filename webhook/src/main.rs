fn main() -> anyhow::Result<()> {
    anyhow::bail!("sv-webhook is not implemented yet")
}
