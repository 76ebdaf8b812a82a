fn main() -> anyhow::Result<()> {
    anyhow::bail!("sv-kind is not implemented yet")
}
