fn main() -> anyhow::Result<()> {
    anyhow::bail!("sv-sim is not implemented yet")
}
